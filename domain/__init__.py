"""Domain types and pure logic shared by the API, workflows and activities (no I/O)."""
