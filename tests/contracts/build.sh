#!/usr/bin/env bash
# Rebuilds the checked-in TestToken.bin and TestToken.abi.json from
# TestToken.sol with solcjs from the npm registry, pinned so that the
# output is the same byte for byte on every machine (the bytecode's
# metadata hash covers the compiler version, the settings and the source).
set -euo pipefail

SOLC_VERSION=0.8.28
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tools="$repo/target/tools/solc-$SOLC_VERSION"

if [ ! -x "$tools/node_modules/.bin/solcjs" ]; then
    mkdir -p "$tools"
    npm install --prefix "$tools" --no-audit --no-fund "solc@$SOLC_VERSION"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# Run from this folder with a bare file name: the source path is part of
# the metadata, so another path would give other bytes at the end.
cd "$here"
"$tools/node_modules/.bin/solcjs" --bin --abi --optimize --optimize-runs 200 \
    -o "$out" TestToken.sol
tr -d '\n' < "$out/TestToken_sol_TestToken.bin" > TestToken.bin
echo >> TestToken.bin
node -e 'const fs=require("fs");const a=JSON.parse(fs.readFileSync(process.argv[1]));fs.writeFileSync(process.argv[2],JSON.stringify(a,null,2)+"\n")' \
    "$out/TestToken_sol_TestToken.abi" TestToken.abi.json
echo "built TestToken.bin ($(tr -d "\n" < TestToken.bin | wc -c) hex chars) with solc $SOLC_VERSION"
