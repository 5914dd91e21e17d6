from jepsen_lite.cli import main

raise SystemExit(main())
