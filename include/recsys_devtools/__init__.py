"""Development tools, apart from the runtime package ``recsys``: cloud emulators, the demo, the seeding
of a source database (synthetic data, MovieLens). Imported only by tests, benchmarks and the demo;
``recsys`` never imports it, and the Airflow, trainer and serving images do not ship it."""
