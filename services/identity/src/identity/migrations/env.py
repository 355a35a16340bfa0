from agora.migrations import run_env
from identity.adapters import metadata

run_env(metadata)
