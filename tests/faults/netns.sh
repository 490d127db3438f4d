#!/usr/bin/env bash
# Two "hosts" on this machine for manual fault experiments and long runs (the ctest fault tests
# create their own pairs; see docs/reliability.md). Needs root, iproute2, nftables.
#
#   tests/faults/netns.sh up NAME          namespaces n3f-manual-NAME-a (10.231.250.1) and -b
#                                          (10.231.250.2), joined by a veth pair
#   tests/faults/netns.sh exec NAME a|b CMD...   run CMD inside side a or b
#   tests/faults/netns.sh loss NAME a|b PERCENT  drop PERCENT % of the packets leaving that side
#   tests/faults/netns.sh cut NAME         drop everything on side a (the link is cut)
#   tests/faults/netns.sh heal NAME        lift the cut
#   tests/faults/netns.sh rate NAME RATE   token-bucket limit on side a's egress, e.g. 80mbit
#   tests/faults/netns.sh down NAME        delete both namespaces (and with them everything above)
#   tests/faults/netns.sh sweep            delete n3f-PID-* namespaces left by killed test runs
set -euo pipefail

usage() { sed -n '2,15p' "$0" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
command=$1
shift

ns() { echo "n3f-manual-$1-$2"; }
table=netio3_faults

case "$command" in
  up)
    [[ $# -eq 1 ]] || usage
    a=$(ns "$1" a) b=$(ns "$1" b)
    ip netns add "$a"
    ip netns add "$b"
    ip link add n3fm-a netns "$a" type veth peer name n3fm-b netns "$b"
    ip -n "$a" addr add 10.231.250.1/24 dev n3fm-a
    ip -n "$b" addr add 10.231.250.2/24 dev n3fm-b
    for side in "$a" "$b"; do
      ip -n "$side" link set lo up
      ip netns exec "$side" nft add table inet "$table"
      ip netns exec "$side" nft add chain inet "$table" loss_out '{ type filter hook output priority 0; policy accept; }'
      ip netns exec "$side" nft add chain inet "$table" cut_out '{ type filter hook output priority 1; policy accept; }'
      ip netns exec "$side" nft add chain inet "$table" cut_in '{ type filter hook input priority 1; policy accept; }'
    done
    ip -n "$a" link set n3fm-a up
    ip -n "$b" link set n3fm-b up
    echo "up: $a 10.231.250.1  <->  $b 10.231.250.2"
    ;;
  exec)
    [[ $# -ge 3 ]] || usage
    name=$1 side=$2
    shift 2
    exec ip netns exec "$(ns "$name" "$side")" "$@"
    ;;
  loss)
    [[ $# -eq 3 ]] || usage
    side=$(ns "$1" "$2")
    ip -n "$side" link set dev "n3fm-$2" gso_max_size 1500
    ip netns exec "$side" nft add rule inet "$table" loss_out numgen random mod 100 '<' "$3" counter drop
    ;;
  cut)
    [[ $# -eq 1 ]] || usage
    a=$(ns "$1" a)
    ip netns exec "$a" nft add rule inet "$table" cut_out counter drop
    ip netns exec "$a" nft add rule inet "$table" cut_in counter drop
    ;;
  heal)
    [[ $# -eq 1 ]] || usage
    a=$(ns "$1" a)
    ip netns exec "$a" nft flush chain inet "$table" cut_out
    ip netns exec "$a" nft flush chain inet "$table" cut_in
    ;;
  rate)
    [[ $# -eq 2 ]] || usage
    ip netns exec "$(ns "$1" a)" tc qdisc replace dev n3fm-a root tbf rate "$2" burst 64kb latency 50ms
    ;;
  down)
    [[ $# -eq 1 ]] || usage
    ip netns del "$(ns "$1" a)" 2>/dev/null || true
    ip netns del "$(ns "$1" b)" 2>/dev/null || true
    ;;
  sweep)
    ip netns list | awk '{print $1}' | while read -r name; do
      if [[ $name =~ ^n3f-([0-9]+)- ]] && ! kill -0 "${BASH_REMATCH[1]}" 2>/dev/null; then
        ip netns del "$name" && echo "deleted $name"
      fi
    done
    ;;
  *) usage ;;
esac
