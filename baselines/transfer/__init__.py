"""Transfer tasks: GoToTarget and VelocityControl, with and without a low-level policy: see README.md beside this file."""
