from nanobanana.cli.main import main

raise SystemExit(main())
