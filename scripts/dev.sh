#!/usr/bin/env bash
# Run the app locally with demo data: bash scripts/dev.sh  (PORT=5001 to change the port)
# The SQLite databases live in the Flask instance folder (instance/), the app's default.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_venv
cd "$ROOT"
export APP_ENV=development
PORT=${PORT:-5000}

flask --app app db upgrade
# Idempotent: creates the demo organization once, prints the demo sign-ins every time.
flask --app app demo seed

echo "Open http://127.0.0.1:$PORT/"
exec flask --app app run --host 127.0.0.1 --port "$PORT"
