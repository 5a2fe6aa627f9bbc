"""Pure rules of the clinic record: no Flask, no database session."""
