from nanobanana.cli import main

raise SystemExit(main())
