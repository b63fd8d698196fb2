"""`python -m khwtui` is the same as the `khwtui` console script."""

from khwtui.cli.command_line import main

raise SystemExit(main())
