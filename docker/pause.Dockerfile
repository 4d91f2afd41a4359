# The pod sandbox ("pause") image the real node's containerd runs for every pod.
# The context holds a static build of docker/pause.c (hack/images compiles it):
#   gcc -Os -static -o ctx/pause docker/pause.c
#   docker build -f docker/pause.Dockerfile -t kaito-py/pause:dev ctx
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
