"""Source data: schema, seeding, extraction, validation and partition storage."""
