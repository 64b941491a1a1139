#!/usr/bin/env bash
# Run a command with a throwaway one-node Ceph S3 gateway on 127.0.0.1: one monitor, one OSD backed by a file
# (bluestore on a sparse file), radosgw; no cephx. Exports AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and ADAPTERHUB_TEST_S3_URL=s3://BUCKET/PREFIX, then tears it all down.
# Installs Debian's ceph-mon, ceph-osd and radosgw (16.2) when missing. Usage: scripts/with-ceph.sh make test
#
# Gotchas: `monmaptool --addv a [v1:IP:PORT]` (a plain --add records msgr2 and a v1 client hangs at auth);
# radosgw 16.2 ignores x-amz-checksum-sha256 but checks Content-MD5 (the blob store sends MD5 and hashes itself).
set -euo pipefail

if ! command -v radosgw >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v ceph-mon >/dev/null; then
  echo "with-ceph: installing ceph-mon ceph-osd radosgw from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq ceph-mon ceph-osd radosgw >/dev/null
fi

D="$(mktemp -d /tmp/adapterhub-ceph.XXXXXX)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RGW_PORT="$(free_port)"; MON_PORT="$(free_port)"
cleanup() {
  for f in "$D"/run/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for _ in $(seq 50); do pgrep -F "$D/run/osd.0.pid" >/dev/null 2>&1 || break; sleep 0.1; done
  rm -rf "$D"
}
trap cleanup EXIT
fail() { echo "with-ceph: $1; logs:" >&2; tail -n 20 "$D"/log/*.log >&2 || true; exit 1; }

mkdir -p "$D"/mon "$D"/osd0 "$D"/run "$D"/log "$D"/rgw
truncate -s "${CEPH_OSD_BYTES:-8G}" "$D/osd0.img"  # sparse: takes only the space written
FSID="$(cat /proc/sys/kernel/random/uuid)"; OSD_UUID="$(cat /proc/sys/kernel/random/uuid)"
cat > "$D/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:$MON_PORT
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = bluestore
bluestore block path = $D/osd0.img
bluestore block create = false
bluestore block db create = false
bluestore block wal create = false
bluestore cache size = 134217728
osd memory target = 939524096
osd crush chooseleaf type = 0
run dir = $D/run
log file = $D/log/\$name.log
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
ms bind ipv6 = false
[mon.a]
mon data = $D/mon
[osd.0]
osd data = $D/osd0
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $D/rgw
CONF
C=(-c "$D/ceph.conf")
monmaptool --create --addv a "[v1:127.0.0.1:$MON_PORT]" --fsid "$FSID" "$D/monmap" >/dev/null
ceph-mon "${C[@]}" -i a --mkfs --monmap "$D/monmap" || fail "ceph-mon --mkfs failed"
ceph-mon "${C[@]}" -i a || fail "ceph-mon did not start"
# a client that talks to a monitor still starting up can get EPERM ("fsid 0000..."): ask again until it answers
for _ in $(seq 30); do timeout 20 ceph "${C[@]}" osd create "$OSD_UUID" >/dev/null 2>&1 && break; sleep 1; done
timeout 20 ceph "${C[@]}" osd create "$OSD_UUID" >/dev/null || fail "the monitor did not answer"
ceph-osd "${C[@]}" -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$D/log/osd-mkfs.out" 2>&1 || fail "ceph-osd --mkfs failed"
for _ in $(seq 5); do ceph-osd "${C[@]}" -i 0 >"$D/log/osd-start.out" 2>&1 && break; sleep 1; done
pgrep -F "$D/run/osd.0.pid" >/dev/null 2>&1 || fail "ceph-osd did not start"
radosgw "${C[@]}" -n client.rgw || fail "radosgw did not start"
for _ in $(seq 150); do curl -sf -m 2 "http://127.0.0.1:$RGW_PORT/" >/dev/null && break; sleep 0.2; done
curl -sf -m 2 "http://127.0.0.1:$RGW_PORT/" >/dev/null || fail "radosgw did not answer on :$RGW_PORT"
KEY="test$RANDOM$RANDOM"; SECRET="secret$RANDOM$RANDOM$RANDOM"
timeout 60 radosgw-admin "${C[@]}" user create --uid=tests --display-name=tests --access-key="$KEY" \
  --secret-key="$SECRET" >/dev/null || fail "radosgw-admin user create failed"

export AWS_ENDPOINT_URL="http://127.0.0.1:$RGW_PORT" AWS_ACCESS_KEY_ID="$KEY" AWS_SECRET_ACCESS_KEY="$SECRET"
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
BUCKET=adapterhub-tests; EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
for _ in $(seq 30); do  # the first bucket waits for radosgw to create its pools
  curl -sf -m 10 -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" --user "$KEY:$SECRET" -H "x-amz-content-sha256: $EMPTY_SHA" "$AWS_ENDPOINT_URL/$BUCKET" >/dev/null && break
  sleep 1
done
curl -sf -m 10 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$KEY:$SECRET" -H "x-amz-content-sha256: $EMPTY_SHA" "$AWS_ENDPOINT_URL/$BUCKET" >/dev/null \
  || fail "could not create bucket $BUCKET"
export ADAPTERHUB_TEST_S3_URL="s3://$BUCKET/t$RANDOM"
echo "with-ceph: Ceph $(ceph-osd --version | awk '{print $3}') radosgw on $AWS_ENDPOINT_URL, OSD on a file (bluestore)," \
  "bucket $ADAPTERHUB_TEST_S3_URL" >&2
"$@"
