from agora.migrations import run_env

run_env()
