"""The catalog role: books, their prices and stock, replicated in sequence order."""
