"""LensOps command-line front end (framework layer: imports the rooms lazily, per subcommand)."""
