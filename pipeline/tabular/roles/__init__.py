"""Column roles: what each column of a competition's tables holds, and so the features it
becomes. One class per role, registered by its module's import here (:data:`ROLES`, in this
order; the dropped roles share one module); :mod:`.base` has the template they fill in.

A role is ``number``, ``boolean``, ``date``, ``category``, ``text`` or ``geo`` (a latitude and a
longitude, declared), which become features, or ``empty``, ``constant``, ``duplicate``,
``dropped`` (declared ``drop``) or ``id``, which are dropped. A new role is one module (a :class:`Role` subclass decorated with
:func:`register`) and one import line below.
"""

from pipeline.tabular.roles.base import ROLES, Cells, Role, declarable, inferred, register
from pipeline.tabular.roles import number  # noqa: F401
from pipeline.tabular.roles import boolean  # noqa: F401
from pipeline.tabular.roles import date  # noqa: F401
from pipeline.tabular.roles import category  # noqa: F401
from pipeline.tabular.roles import text  # noqa: F401
from pipeline.tabular.roles import dropped  # noqa: F401
from pipeline.tabular.roles import identifier  # noqa: F401
from pipeline.tabular.roles import geo  # noqa: F401

__all__ = ["ROLES", "Cells", "Role", "declarable", "inferred", "register"]
