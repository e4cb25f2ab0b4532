import tomli_w

text = tomli_w.dumps({"app": {"answer": 42}})
assert text == "[app]\nanswer = 42\n", text
print("hello from python, tomli-w writes TOML")
