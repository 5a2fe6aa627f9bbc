"""Demo organization, users and patients, written through the one write path."""
