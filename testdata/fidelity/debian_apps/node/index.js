const isNumber = require("is-number");
if (!isNumber("42") || isNumber("forty-two")) {
  throw new Error("is-number misbehaves");
}
console.log("hello from node, is-number works");
