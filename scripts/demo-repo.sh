#!/usr/bin/env bash
# Create the demo's bare repository BARE and a working clone WORK from examples/app, with branches
# master, develop and feature/login. Idempotent: leaves an existing repository alone.
set -euo pipefail
BARE=$1
WORK=$2
SRC="$(cd "$(dirname "$0")/.." && pwd)/examples/app"
if [ -d "$BARE" ]; then exit 0; fi
mkdir -p "$(dirname "$BARE")"
git init -q --bare -b master "$BARE"
rm -rf "$WORK"
git init -q -b master "$WORK"
cp -r "$SRC"/. "$WORK"/
cd "$WORK"
git -c user.name=demo -c user.email=demo@example.org add -A
git -c user.name=demo -c user.email=demo@example.org commit -qm "demo app"
git remote add origin "$BARE"
git push -q origin master
git checkout -q -b develop
echo '<p>staging: next release</p>' >> site/index.html
git -c user.name=demo -c user.email=demo@example.org commit -qam "develop: next release"
git push -q origin develop
git checkout -q -b feature/login
echo '<p>feature: login form</p>' >> site/index.html
git -c user.name=demo -c user.email=demo@example.org commit -qam "login form"
git push -q origin feature/login
git checkout -q master
git config user.name demo
git config user.email demo@example.org
