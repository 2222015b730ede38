#!/bin/sh
# help-to-man.sh -- turns a tool's --help, which is laid out as a manual page, into one (roff, man(7)).
#
#   broker/dist/help-to-man.sh bin/referral-broker > referral-broker.1
#
# A line of capitals at the left margin (NAME, SYNOPSIS, ...) becomes a section heading; every other line
# is kept as laid out (no filling), less the four spaces of indent the sections already give, with
# roff's special characters escaped. make install writes one page per tool this way, so the page and
# --help never disagree.
set -eu
tool=$1
name=$(basename "$tool")
"$tool" --help | awk -v name="$name" '
BEGIN { printf ".TH %s 1 \"\" \"Referral Broker\" \"Referral Broker Manual\"\n", toupper(name) }
/^[A-Z][A-Z ]*$/ { printf ".SH %s\n.nf\n", $0; blank = 0; next }
/^$/ { blank = 1; next }
{
    if (blank) print ""
    blank = 0
    sub(/^    /, "")
    gsub(/\\/, "\\e")
    gsub(/-/, "\\-")
    if ($0 ~ /^[.\047]/) $0 = "\\&" $0
    print
}
END { print ".fi" }'
