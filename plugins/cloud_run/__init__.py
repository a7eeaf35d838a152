"""Cloud Run Jobs: the hook, the deferrable execution operator and its trigger, the trainer job."""
