#!/bin/bash
# fjall vs redb for roomcast's history load (loadtest/store-choice.md has the results and the method).
# Builds nothing: run `cargo build --release` here first (a crate of its own, outside the workspace, so CI
# never builds redb). Usage: run.sh [all|1|2|3|4|5]. Every measurement under nice -n 10; output in
# results/*.log; scratch data under $STOREBENCH_DATA (default /tmp/storebench-data), deleted as it goes.
set -u
cd "$(dirname "$0")"
B=target/release/storebench
D=${STOREBENCH_DATA:-/tmp/storebench-data}
mkdir -p results $D
SEC=${1:-all}
lg() { echo "# $(date +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)"; }
if [[ $SEC == all || $SEC == 1 ]]; then
  : > results/s1.log
  for st in fjall redb; do for m in every_write interval off; do for b in 1 64; do
    lg >> results/s1.log
    timeout 90 nice -n 10 $B append $st $m $b $D/s1 10 >> results/s1.log 2>&1; rm -rf $D/s1
  done; done; done
  for m in interval off; do for b in 1 64; do
    lg >> results/s1.log
    timeout 90 nice -n 10 $B append redb-nosync $m $b $D/s1 10 >> results/s1.log 2>&1; rm -rf $D/s1
  done; done
fi
if [[ $SEC == all || $SEC == 2 ]]; then
  : > results/s2.log
  for st in fjall redb redb-nosync; do for m in interval off; do
    for t in 1 2 3; do lg >> results/s2.log; timeout 90 nice -n 10 $B crash $st $m 64 $D/s2 2000 >> results/s2.log 2>&1; rm -rf $D/s2; done
    lg >> results/s2.log; timeout 90 nice -n 10 $B crash $st $m 1 $D/s2 2000 >> results/s2.log 2>&1; rm -rf $D/s2
  done; done
fi
if [[ $SEC == all || $SEC == 3 ]]; then
  : > results/s3.log
  for st in fjall redb; do
    lg >> results/s3.log
    timeout 90 nice -n 10 $B load $st $D/s3-$st 10000 1000 >> results/s3.log 2>&1
    echo "du_sb_after_load $st $(du -sb $D/s3-$st | cut -f1)" >> results/s3.log
    lg >> results/s3.log
    timeout 90 nice -n 10 $B reopen-read $st $D/s3-$st 10000 1000 2000 300 >> results/s3.log 2>&1
    echo "du_sb_after_reopen $st $(du -sb $D/s3-$st | cut -f1)" >> results/s3.log
    rm -rf $D/s3-$st
  done
fi
if [[ $SEC == all || $SEC == 5 ]]; then
  : > results/s5.log
  for st in fjall redb; do
    lg >> results/s5.log
    timeout 90 nice -n 10 $B trim $st $D/s5-$st 10000 100 >> results/s5.log 2>&1
    echo "du_sb_after_close $st $(du -sb $D/s5-$st | cut -f1)" >> results/s5.log
    rm -rf $D/s5-$st
  done
fi
