echo base >foo
cat >Dockerfile <<'DOCKERFILE'
FROM scratch AS withgit
COPY .git/HEAD out

FROM scratch as withsubmod
COPY submod/file out

FROM scratch
COPY foo out
DOCKERFILE
# A relative URL: resolved against the remote the repository is fetched from, so the
# served submodule is its sibling, and the commit ids do not depend on the server's port.
git submodule add -q ../submod.git submod
git add Dockerfile foo submod
git commit -qm initial
git tag v0.0.1
git branch base
echo feature >foo
mkdir sub
echo subfeature >sub/foo
cp Dockerfile sub/
git add foo sub
git commit -qm feature
git branch feature
git checkout -qB master base
echo v0.0.2 >foo
git add foo
git commit -qm v0.0.2
git tag v0.0.2
echo latest >foo
git add foo
git commit -qm latest
git tag latest
