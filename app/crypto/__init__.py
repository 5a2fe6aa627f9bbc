"""Server-side cryptography: sealed record fields (AES-GCM) and signed audit checkpoints
(Ed25519). Pure functions and small key holders; configuration hands them their keys."""
