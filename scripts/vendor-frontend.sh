#!/usr/bin/env bash
# Vendor the dashboard's front-end libraries into fleet/web/static/vendor/, from their npm packages
# at pinned versions, each checked against the registry's sha512 integrity, with its licence.
# The result is committed: running or testing edgefleet needs no Node toolchain and no internet
# (the dashboard works on a closed network). Re-run only to change a version; needs npm.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=fleet/web/static/vendor

# name version integrity files-to-keep (paths inside the package)
PACKAGES=(
  "leaflet 1.9.4 sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA== LICENSE dist/leaflet.js dist/leaflet.css dist/images/layers.png dist/images/layers-2x.png dist/images/marker-icon.png dist/images/marker-icon-2x.png dist/images/marker-shadow.png"
  "leaflet.markercluster 1.5.3 sha512-vPTw/Bndq7eQHjLBVlWpnGeLa3t+3zGiuM7fJwCkiMFq+nmRuG3RI3f7f4N4TDX7T4NpbAXpR2+NTRSEGfCSeA== MIT-LICENCE.txt dist/leaflet.markercluster.js dist/MarkerCluster.css dist/MarkerCluster.Default.css"
  "uplot 1.6.32 sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw== LICENSE dist/uPlot.iife.min.js dist/uPlot.min.css"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
manifest="$dest/VERSIONS.txt"
mkdir -p "$dest"
: > "$manifest.new"
for entry in "${PACKAGES[@]}"; do
    read -r name version integrity files <<< "$entry"
    (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
    tarball="$work/$name-$version.tgz"
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
    if [ "$actual" != "$integrity" ]; then
        echo "vendor: $name@$version integrity mismatch: $actual" >&2
        exit 1
    fi
    rm -rf "${dest:?}/$name" "$work/package"
    tar xzf "$tarball" -C "$work"
    for f in $files; do
        mkdir -p "$dest/$name/$(dirname "$f")"
        cp "$work/package/$f" "$dest/$name/$f"
    done
    rm -rf "$work/package"
    echo "$name $version $integrity" >> "$manifest.new"
    echo "vendor: $name@$version"
done
mv "$manifest.new" "$manifest"
