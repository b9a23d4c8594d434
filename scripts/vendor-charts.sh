#!/bin/sh
# Vendors Chart.js (the dashboard's plots) from npm into the dashboard's static files, so the pages
# draw offline with no CDN. The pin is static/vendor/chart.js.version: "VERSION INTEGRITY".
#   scripts/vendor-charts.sh            re-fetch the pinned version; its tarball must match the pinned sha512
#   scripts/vendor-charts.sh 4.7.0      move to another version: the registry's sha512 for it becomes the pin
set -eu
cd "$(dirname "$0")/.."
vendor=src/aistack/dashboard/static/vendor
pin="$vendor/chart.js.version"
if [ $# -ge 1 ]; then
  version=$1
  integrity=$(npm view "chart.js@$version" dist.integrity)
else
  read -r version integrity < "$pin"
fi
case "$integrity" in sha512-?*) ;; *) echo "no sha512 integrity for chart.js@$version: '$integrity'" >&2; exit 1 ;; esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball=$(cd "$work" && npm pack "chart.js@$version" --silent --no-update-notifier)
actual="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
if [ "$actual" != "$integrity" ]; then
  echo "chart.js@$version: the tarball's $actual is not the pinned $integrity" >&2
  exit 1
fi
tar -xzf "$work/$tarball" -C "$work" package/dist/chart.umd.min.js package/LICENSE.md
mkdir -p "$vendor"
# The bundle carries its own MIT banners (Chart.js and the @kurkle/color it includes).
cp "$work/package/dist/chart.umd.min.js" "$vendor/chart.umd.min.js"
cp "$work/package/LICENSE.md" "$vendor/chart.js.LICENSE.md"
echo "$version $integrity" > "$pin"
echo "vendored chart.js $version ($integrity) into $vendor"
