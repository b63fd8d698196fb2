"""`python -m khwtui` is the same as the `khwtui` console script."""

from khwtui.cli import main

raise SystemExit(main())
