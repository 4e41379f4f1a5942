"""The command line: `eagle-explore` and its subcommands."""
