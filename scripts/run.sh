#!/usr/bin/env bash
# Set up and run distillapp: web server and job worker; Ctrl-C stops both.
# No configuration needed: SQLite and an embedded Redis live in ./var.
source "$(dirname "$0")/bootstrap.sh"
# A local run serves plain HTTP on loopback: no secure-only cookies, HSTS or HTTPS redirect.
export DJANGO_SECURE="${DJANGO_SECURE:-false}"
python manage.py migrate --noinput -v0
python manage.py seed_demo
exec python manage.py serve "$@"
