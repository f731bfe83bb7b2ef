"""Reports built from recorded results: HTML, Markdown, summary JSON."""
