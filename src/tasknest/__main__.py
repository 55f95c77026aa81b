from tasknest.deploy.cli import main

raise SystemExit(main())
