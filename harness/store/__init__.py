"""What runs leave behind: the run record and its schema, the results folder (records, entries,
stored submissions), what a record derives from its epochs, claims and status."""
