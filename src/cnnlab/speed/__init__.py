"""Speed: the runtime switches and Lightning trims, each with one switch (docs/speed.md)."""
