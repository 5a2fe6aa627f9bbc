"""Operations on the database: they flush, never commit; the caller owns the transaction."""
