from raftpg.cli.main import main

raise SystemExit(main())
