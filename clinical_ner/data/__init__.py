"""Data contracts: notes as delivered, extraction records, schemas, publishing, analytics."""
