# Before `configfile:`: Snakemake's own loader says only "not valid JSON or YAML" for a syntax
# error in config.yaml; this names the file, line and column. (A --configfile is read by
# Snakemake before the workflow: `python workflow/dynsparse/configload.py FILE` locates its
# errors.)
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from dynsparse.configload import ConfigFiles, ConfigSyntaxError, check_yaml_syntax

try:
    check_yaml_syntax(["config.yaml"])
except ConfigSyntaxError as error:
    raise WorkflowError(str(error)) from None
