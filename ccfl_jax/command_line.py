"""What every command's `cli()` shares: absl's --help as useful from a console script
(`ccfl-train`, ...) as from `python -m ccfl_jax.<module>`."""
import sys

from absl import flags


def describe_as_main(module_name: str) -> None:
  """Make module `module_name` what absl's --help describes: its docstring is the usage and
  its flags are listed. absl lists the flags of the module named `sys.argv[0]`, which for a
  console script is the installer's wrapper, not the module that defined them."""
  defined_in = sys.argv[0] if module_name == "__main__" else module_name
  for flag in flags.FLAGS.get_key_flags_for_module(defined_in):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  sys.modules["__main__"].__doc__ = sys.modules[module_name].__doc__
