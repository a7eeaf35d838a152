"""The tasks' logic, one module per DAG: plain functions taking plain values (and small typed plans).

DAG files call one function here per task; these modules call the runtime library (``recsys.data``,
``recsys.training``, ...) and the provider-style plugins. Nothing below imports them.
"""
