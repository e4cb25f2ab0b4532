#!/bin/sh
echo "hello from a container built by rbuild"
