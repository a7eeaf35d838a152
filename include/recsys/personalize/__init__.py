"""Amazon Personalize logic the DAGs call: provisioning plans, record sync, event merge, smoke tests."""
