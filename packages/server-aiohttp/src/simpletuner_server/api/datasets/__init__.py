"""Dataset folders: listing, uploads (files and zips, with traversal and type checks), request bodies."""
