cp "$CASE_DIR/Dockerfile" Dockerfile
git add Dockerfile
GIT_AUTHOR_DATE=2023-11-14T22:15:01Z GIT_COMMITTER_DATE=2023-11-14T22:15:01Z git commit -qm msg
