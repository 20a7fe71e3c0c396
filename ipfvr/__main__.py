from ipfvr.cli import main

raise SystemExit(main())
