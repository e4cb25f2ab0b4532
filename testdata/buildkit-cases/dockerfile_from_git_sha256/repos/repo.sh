# The branch `first` has the case's Dockerfile without its last line; master has it whole.
sed '$d' "$CASE_DIR/Dockerfile" >Dockerfile
git add Dockerfile
git commit -qm initial
git branch first
cp "$CASE_DIR/Dockerfile" Dockerfile
git add Dockerfile
git commit -qm second
