from ctrace.cli import main

raise SystemExit(main())
