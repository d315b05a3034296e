from svc_exec.main import main

main()
