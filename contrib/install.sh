#!/bin/sh
# Install crterm for this user: the program (cargo install, into ~/.cargo/bin), its man
# pages (into $XDG_DATA_HOME/man/man1) and its bash, zsh and fish completions, all made
# from the program's own command-line definition.
set -eu
cd "$(dirname "$0")/.."
cargo install --locked --quiet --path .
bin="${CARGO_HOME:-$HOME/.cargo}/bin/crterm"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
config="${XDG_CONFIG_HOME:-$HOME/.config}"
mkdir -p "$data/man/man1" "$data/bash-completion/completions" "$data/zsh/site-functions" \
    "$config/fish/completions"
"$bin" man "$data/man/man1"
"$bin" completions bash > "$data/bash-completion/completions/crterm"
"$bin" completions zsh > "$data/zsh/site-functions/_crterm"
"$bin" completions fish > "$config/fish/completions/crterm.fish"
echo "installed $bin, its man pages in $data/man/man1 and its completions"
