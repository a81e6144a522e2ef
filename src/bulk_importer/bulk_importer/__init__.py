"""BulkImporter function: import messages into AWS IoT Core with the fewest calls per certificate."""
