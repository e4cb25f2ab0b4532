echo 123 >file
git add file
git commit -qm initial
