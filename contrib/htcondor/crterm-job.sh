#!/bin/sh
# An HTCondor job whose program is checkpointed by crterm, in HTCondor's self-checkpointing
# convention: every CRTERM_EVERY (default 1h) the session is checkpointed into
# session.img and the job exits 85; HTCondor then keeps session.img (transferred as a
# checkpoint file) and starts the job again at once, and the same command resumes the
# image. When the job is evicted, HTCondor's SIGTERM does the same checkpoint first.
#
#   crterm-job.sh COMMAND [ARGS...]       (see crterm.sub)
#
# A session whose command ends by itself ends the job with the command's exit status.
every=${CRTERM_EVERY:-1h}
# timeout hands its SIGTERM (and HTCondor's) to crterm, and exits with crterm's status.
exec timeout --preserve-status --signal=TERM "$every" \
    "${CRTERM:-crterm}" start --detached --wait --name job --image "$PWD/session.img" -- "$@"
