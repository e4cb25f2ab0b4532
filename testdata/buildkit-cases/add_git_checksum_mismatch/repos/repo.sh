for tag in v0.0.1 v0.0.2 v0.0.3; do
  echo "foo of $tag" >foo
  git add foo
  git commit -qm "$tag"
  git tag "$tag"
done
