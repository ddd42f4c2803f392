#!/bin/sh
# The AWS CLI's checks, run by freshen inside the candidate image with test credentials only.
# AWS_ENDPOINT_URL points at moto server unless real AWS is configured.
# Protocol: each command is wrapped in `step NAME CMD…`, which prints
#   ::freshen-step-begin NAME / output / ::freshen-step-end NAME EXIT_CODE
# and freshen records every step's exit code and output tail. The first failure stops the test;
# whatever it created is removed on exit, pass or fail.
set -u
work=$(mktemp -d)
suffix=$(printf '%s' "${FRESHEN_TEST_ID:-manual$$}" | tr -cd 'a-z0-9' | cut -c1-40)
bucket="freshen-test-${suffix}"
instance=""

step() {
  name=$1
  shift
  echo "::freshen-step-begin $name"
  "$@" >"$work/out" 2>"$work/err"
  rc=$?
  cat "$work/out" "$work/err"
  echo
  echo "::freshen-step-end $name $rc"
  return "$rc"
}

cleanup() {
  # Also by tag: a run-instances cut short (or an earlier attempt of this test id that was
  # stopped) may have started an instance whose id this script never saw.
  tagged=$(aws ec2 describe-instances --filters "Name=tag:freshen-test,Values=$suffix" \
    "Name=instance-state-name,Values=pending,running" \
    --query 'Reservations[].Instances[].InstanceId' --output text 2>/dev/null)
  ids=$(echo $tagged)
  case " $ids " in *" $instance "*) ;; *) ids=$(echo $ids $instance) ;; esac
  if [ -n "$ids" ]; then
    aws ec2 terminate-instances --instance-ids $ids >/dev/null 2>&1
  fi
  aws s3 rb --force "s3://$bucket" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
# Stopped by freshen (time limit, or a redelivered attempt replacing this one): exit, so that
# the EXIT trap removes the bucket and the instance.
trap 'exit 143' INT TERM

step aws-version aws --version || exit 1
# `aws help` renders its manual (groff) and is long: a missing groff or pager fails it.
step aws-help sh -c 'aws help >"$1" && [ "$(wc -l <"$1")" -gt 50 ]' _ "$work/help" || exit 1
step ec2-describe-instances aws ec2 describe-instances || exit 1
# The current Amazon Linux AMI from AWS's public parameter: right on real AWS, served by moto too.
step ec2-find-image aws ssm get-parameter \
  --name /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64 \
  --query Parameter.Value --output text || exit 1
ami=$(head -n1 "$work/out")
# Tagged with the test id, so a leftover instance can be traced to its test.
step ec2-run-instances aws ec2 run-instances --image-id "$ami" --instance-type t3.micro \
  --count 1 --tag-specifications "ResourceType=instance,Tags=[{Key=freshen-test,Value=$suffix}]" \
  --query 'Instances[0].InstanceId' --output text || exit 1
instance=$(head -n1 "$work/out")
step ec2-terminate-instances aws ec2 terminate-instances --instance-ids "$instance" || exit 1
instance=""
step s3-ls aws s3 ls || exit 1
step s3-mb aws s3 mb "s3://$bucket" || exit 1
# As users script it: real AWS CLI JSON piped to jq, which must find the new bucket.
step s3-list-jq sh -c 'aws s3api list-buckets --output json \
  | jq -e --arg b "$1" "[.Buckets[].Name] | index(\$b) != null"' _ "$bucket" || exit 1
echo "freshen test payload $suffix" >"$work/upload.txt"
step s3-cp-up aws s3 cp "$work/upload.txt" "s3://$bucket/upload.txt" || exit 1
step s3-cp-down aws s3 cp "s3://$bucket/upload.txt" "$work/download.txt" || exit 1
step s3-content-matches cmp "$work/upload.txt" "$work/download.txt" || exit 1
step s3-rb aws s3 rb --force "s3://$bucket" || exit 1
