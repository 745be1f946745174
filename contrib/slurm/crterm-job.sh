#!/bin/bash
# A Slurm batch job whose program survives preemption, requeueing and time limits: it
# runs in a crterm session; when Slurm signals the job, crterm checkpoints the session
# into its image and exits 85, the job is requeued, and when it starts again the same
# command resumes the image, so the program goes on from where it was.
#
#   sbatch contrib/slurm/crterm-job.sh NAME COMMAND [ARGS...]
#   srun --jobid JOBID --overlap --pty crterm attach NAME     # look at it, C-\ x to leave
#
# The image is $CRTERM_IMAGES/NAME.img (default ~/crterm-jobs), which must be on storage
# every node the job may run on can read. A session whose command ends by itself leaves
# the job with the command's exit status; its last image stays: remove it before
# submitting NAME anew.
#
# Slurm signals the whole job when it requeues or preempts it. With ProctrackType
# proctrack/pgid only this script's process group gets that SIGTERM, and crterm
# checkpoints the session; with proctrack/cgroup or linuxproc the session's programs get
# it too, at the same moment, and most end at once. There, ask for the signal to reach
# crterm first: --signal=B:TERM@SECS below does this before the time limit, and sites
# can do it before preemption (PreemptParameters=send_user_signal with a GraceTime).
# Add --autosave 30m (and --keep N) to the crterm line to have an image to come back to
# whatever ends the job.
#
#SBATCH --job-name=crterm
#SBATCH --requeue
#SBATCH --signal=B:TERM@120
#SBATCH --open-mode=append

if [ $# -lt 2 ]; then
    echo "usage: sbatch $0 NAME COMMAND [ARGS...]" >&2
    exit 2
fi
name=$1
shift
images=${CRTERM_IMAGES:-$HOME/crterm-jobs}
mkdir -p "$images"

"${CRTERM:-crterm}" start --detached --wait --name "$name" --image "$images/$name.img" -- "$@" &
crterm=$!
# The signal is for crterm (--signal=B: reaches this shell only).
trap 'kill -TERM $crterm 2>/dev/null' TERM HUP INT USR1 USR2
# A trapped signal ends `wait` early: wait again until crterm itself has ended.
while :; do
    wait $crterm
    status=$?
    kill -0 $crterm 2>/dev/null || break
done
# 85: checkpointed. Put the job back in the queue to be resumed (sites may instead set
# RequeueExit=85 in slurm.conf, which does this for every job).
if [ $status -eq 85 ] && [ -n "$SLURM_JOB_ID" ]; then
    scontrol requeue "$SLURM_JOB_ID"
fi
exit $status
